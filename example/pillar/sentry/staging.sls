# staging: as prod (sentry.prod comes first), with its own names, secrets and
# upstream: PyPI as the staging proxy mirrors it.
sentry:
  server:
    root_password: change-me-staging
    secret: change-me-staging-replication-secret
  nginx:
    server_name: pypi-staging.example.org
    replica_addresses:
      - 10.0.30.0/24
    tls:
      cert: /etc/ssl/certs/pypi-staging.example.org.pem
      key: /etc/ssl/private/pypi-staging.example.org.key
  mirror:
    url: https://pypi-mirror.staging.example.org/simple/
  theme:
    title: Example Corp packages (staging)
