"""The service over HTTP: the Flask app factory and the JSON API v1 (``api`` blueprint)."""
