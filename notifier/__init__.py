"""notifier: a notification delivery microservice.

The package is layered: ``models`` and ``schemas`` know nothing of HTTP; ``storage`` owns the
database (engine, migrations, the SQL that matters); ``api`` is the FastAPI application built by
``create_app(settings)``; ``channels`` are the delivery plugins that the dispatch workers
(the separate ``workers`` package) drive.
"""

__version__ = "0.1.0"
