# What current BuildKit builds from ./Dockerfile (docker 20.10's frontend lacks --parents):
# each source keeps its path relative to the context (or to a /./ pivot) under the destination,
# and the context itself (`.`) none.
FROM scratch AS p
COPY a/b/f.txt /out/a/b/
COPY c/x.txt c/y.txt /out/c/
COPY a/b/f.txt /pivot/b/
COPY . /tree/

FROM busybox
COPY --from=p /out /out/
COPY --from=p /pivot /pivot/
COPY --from=p /tree /tree/
