# Which pillar each sentry host gets: the shared settings, then its
# environment's (nodegroups: example/master.d/sentry-environments.conf).
# Salt merges the files in this order, key by key: a later file overrides an
# earlier one's keys and keeps the rest. Staging runs as prod does, with
# overrides of its own.
base:
  'sentry-*':
    - sentry.common
  dev:
    - match: nodegroup
    - sentry.dev
  staging:
    - match: nodegroup
    - sentry.prod
    - sentry.staging
  prod:
    - match: nodegroup
    - sentry.prod
  staging-replicas:
    - match: nodegroup
    - sentry.staging_replica
  prod-replicas:
    - match: nodegroup
    - sentry.prod_replica
