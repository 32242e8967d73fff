# prod: the master. HTTPS (the certificate and key are put on the host by
# whatever manages the company's certificates), only root makes users and
# indexes, replicas behind a front (sentry.front on the front host), a backup
# every six hours with a restore drill every night.
sentry:
  server:
    root_password: change-me-prod
    role: primary
    # Master and replicas share the secret and its key derivation.
    secret: change-me-prod-replication-secret
    restrict_modify: root
  nginx:
    server_name: pypi.example.org
    replica_addresses:
      - 10.0.20.0/24
    limits:
      # The front: clients behind it, not it, are counted.
      trusted_proxies: [10.0.10.5]
    tls:
      enabled: true
      cert: /etc/ssl/certs/pypi.example.org.pem
      key: /etc/ssl/private/pypi.example.org.key
  theme:
    title: Example Corp packages
  bootstrap:
    users:
      ci:
        password: change-me-ci
    indexes:
      ci/releases:
        bases: [root/pypi]
        volatile: false
        acl_upload: [ci]
  backup:
    enabled: true
    dir: /srv/sentry-backups
