# What current BuildKit builds from ./Dockerfile (docker 20.10's frontend lacks RUN
# --network): with none, the step sees only lo; RUN flags are not written in the history.
FROM busybox
RUN echo lo > /ifaces
RUN echo host > /host-ok
RUN echo default > /default-ok
