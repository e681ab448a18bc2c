"""The fleet control plane: check-in API, inventory, rollouts, events (docs/control-plane.md).

    protocol.py     the check-in protocol: wire models, signatures (pure; atolld uses it too)
    models.py       the tables (SQLAlchemy 2); migrations/ creates them (Alembic)
    db.py           one data layer over SQLite and PostgreSQL: sessions, schema upgrades
    auth.py         operator tokens, roles, customer scopes (pure)
    inventory.py    what a check-in changes, which host events it makes (pure)
    directives.py   decide_for_host: the target and steps a host is allowed (its rollout's)
    service.py      hosts' transactions: enrol, check in; the lost-host sweep
    operations.py   operators' reads and actions, authorized and recorded
    app.py          the HTTP API (FastAPI; OpenAPI at /openapi.json)
    server.py       `atoll fleet serve`: the API on uvicorn, the sweep, FleetLock beside it
    client.py       the operators' HTTP client (the CLI, integrations)
    rollouts.py     rollouts: waves, failure budget, halt, floors, dead ends (pure)
    rollout_sim.py  the same decisions over a FleetLock service: simulation, load test
    rollout_store.py  rollouts on the database: check-in decisions, the driver's tick
    rollout_ops.py  operators' rollout actions: create, status, halt, resume, abort

Modules are imported where they are used; importing this package loads nothing else.
The server's libraries (FastAPI, SQLAlchemy, Alembic, psycopg) are the ``control``
extra: hosts never load them (atolld imports only ``protocol``).
"""
