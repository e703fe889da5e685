"""The seed article's Flask app, for the --preload replay (sync SQLAlchemy over psycopg 3):
the engine is built at import and used before gunicorn forks, so every worker inherits the
same pooled connection, and `/dispose` in one worker closes the connection the others still
use. Never do this; flask-app/ builds on poolwarden.threaded, whose pools no fork shares."""

import os
import socket

from flask import Flask, jsonify
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

engine = create_engine(
    f"postgresql+psycopg://{os.environ['POOLWARDEN_DB_USER']}:"
    f"{os.environ['POOLWARDEN_DB_PASSWORD']}@{os.environ['POOLWARDEN_DB_HOST']}:"
    f"{os.environ['POOLWARDEN_DB_PORT']}/{os.environ['POOLWARDEN_DB_NAME']}",
    pool_size=5,      # default in SQLAlchemy
    max_overflow=10,  # default in SQLAlchemy
    pool_timeout=1,   # raise an error faster than default
)
Session = sessionmaker(bind=engine)

# Create a session and make a query: the connection is now part of the pool, pre-fork.
with Session() as session:
    session.execute(text("SELECT 1"))

app = Flask(__name__)


@app.get("/readyz")
def readyz():
    return jsonify({"status": "ready"})


@app.get("/query")
def query():
    with Session() as session:
        backend = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        fd = session.connection().connection.dbapi_connection.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            host, port = sock.getsockname()[:2]
    return jsonify({"pid": os.getpid(), "backend": backend, "client": f"{host}:{port}"})


@app.get("/dispose")
def dispose():
    engine.dispose()
    return jsonify({"pid": os.getpid(), "disposed": True})
