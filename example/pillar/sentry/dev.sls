# dev: self-service. Anyone registers a user and makes indexes for it
# (devpi's own default); plain HTTP inside the office network.
sentry:
  server:
    # Keep secrets in an encrypted pillar (#!yaml|gpg); the states read them,
    # never show them.
    root_password: change-me-dev
    restrict_modify: ''
  nginx:
    server_name: pypi-dev.example.org
  theme:
    title: Example Corp packages (dev)
