# What current BuildKit builds from ./Dockerfile (docker 20.10's frontend lacks heredocs):
# a plain heredoc runs its body with the shell; one with a shebang is mounted at
# /dev/pipes/<name> (a tmpfs: nothing in the layer) and executed; COPY <<EOF writes a 0644
# root-owned file with variables expanded; <<- strips leading tabs; a heredoc after other
# words goes to the shell verbatim.
FROM busybox
ENV WHO=world
RUN echo line one > /heredoc-run; echo line two >> /heredoc-run
RUN echo "shebang /dev/pipes/EOF" > /heredoc-shebang
COPY greeting.txt /etc/greeting
COPY tabbed.txt /tabbed
RUN echo from stdin > /heredoc-stdin
