# prod's replicas: sentry.prod first (the secret, TLS with the same names,
# the theme), then this: each follows the master and serves reads behind the
# front. Users, indexes and backups are the master's alone (sentry.bootstrap
# leaves replicas out).
sentry:
  server:
    role: standalone  # a replica's role comes from master_url
    master_url: https://pypi-master.example.org
  backup:
    enabled: false
