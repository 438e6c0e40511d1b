# What current BuildKit builds from ./Dockerfile (docker 20.10's frontend lacks --link): the
# same files, the copy made on scratch and merged; --link is not written in the history.
FROM busybox
COPY a.txt /linked/a.txt
COPY dir/ /linked-dir/
COPY --chown=1:2 a.txt /linked-owned
RUN echo after-link >> /linked/a.txt
