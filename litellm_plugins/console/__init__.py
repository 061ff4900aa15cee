"""The web console at ``GET /plugins/ui/``: static pages that talk only to our public ``/plugins/*`` API."""
