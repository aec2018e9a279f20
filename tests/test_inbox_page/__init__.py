"""The end-user inbox page (``GET /inbox``) in a real browser: Debian's Chromium driven by
Playwright, against a real service and a real dispatch worker.

Runs on both databases (the ``database_url`` parameter of the shared fixtures): a browser run
takes a few seconds per database, which is affordable. The page is driven only through what a
user does (clicks) and checked through the DOM and the public API; DOM conditions are awaited
with Playwright's ``expect``, never with fixed sleeps.
"""
