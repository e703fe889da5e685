"""poolwarden's threaded reference consumer: Flask on gunicorn gthread, sync SQLAlchemy over
psycopg 3 through PgBouncer, `--preload` on, its pools following the plan file live."""
