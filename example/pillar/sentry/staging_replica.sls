# staging's replicas: sentry.prod and sentry.staging first (staging's secret,
# TLS names, theme), then this: each follows staging's master. Users, indexes
# and backups are the master's alone.
sentry:
  server:
    role: standalone  # a replica's role comes from master_url
    master_url: https://pypi-staging-master.example.org
  backup:
    enabled: false
