from flask import Flask
import os
import socket

app = Flask(__name__)


@app.route("/")
def hello():
    html = "<h3>Hello {name}!</h3>" \
           "<b>Hostname:</b> {hostname}<br/>"
    return html.format(name=os.getenv("NAME", "world"), hostname=socket.gethostname())


if __name__ == "__main__":
    # The tutorial's app listens on port 80 of every interface; HOST and PORT move it (the
    # end-to-end test binds a free port on 127.0.0.1, as containers share the host's network).
    app.run(host=os.getenv("HOST", "0.0.0.0"), port=int(os.getenv("PORT", "80")))
