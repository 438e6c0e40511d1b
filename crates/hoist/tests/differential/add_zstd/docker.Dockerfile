# What current BuildKit builds from ./Dockerfile (docker 20.10 does not unpack zstd): the
# archive unpacked, as the same tar uncompressed is.
FROM busybox
ADD plain.tar /zstd/
