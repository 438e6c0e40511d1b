#!/bin/sh
echo "Hello ${NAME:-there}! This image was $(cat /app/built.txt)."
