{#- Remove the package; /var/lib/sentry (the data) is never touched by it. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-package-purged:
  pkg.purged:
    - name: {{ sentry.package.name }}
