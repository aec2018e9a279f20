"""Test support: databases and running services, shared by every test package."""
