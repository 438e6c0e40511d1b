# What current BuildKit builds from ./Dockerfile (docker 20.10's frontend takes octal --chmod
# only): a symbolic mode is applied to each source's own mode (fsutil copyFileInfo:
# modeSet.Apply), and a created destination directory stays 0755 (no octal mode to use).
FROM busybox AS p
COPY dir /symdir/
RUN chmod -R g+w /symdir && chmod 0755 /symdir

FROM busybox
COPY --chmod=750 f.txt /sym-750
COPY --chmod=755 f.txt /sym-755
COPY --from=p /symdir /symdir/
