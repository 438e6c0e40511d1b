# What current BuildKit builds from ./Dockerfile (docker 20.10's frontend lacks --exclude):
# patterns match paths relative to the source, like .dockerignore (`*.log` only at its top).
FROM busybox AS p
COPY src/ /dst/
COPY . /all/
RUN rm -rf /dst/*.log /dst/tmp && busybox find /all -name '*.md' -exec rm {} +

FROM busybox
COPY --from=p /dst /dst/
COPY --from=p /all /all/
