{#- Put Debian's default site back where sentry.nginx.default_site found it,
    once no site of sentry's (any instance, or a front) is enabled on this host. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set nginx, aside = sentry.nginx, sentry.derived.default_site_aside %}

sentry-nginx-default-site-restored:
  file.rename:
    - name: {{ nginx.sites_enabled }}/default
    - source: {{ aside }}/default
    - onlyif:
      - "! grep -qs 'Managed by Salt (sentry formula' {{ nginx.sites_enabled }}/*"

sentry-nginx-default-site-aside-absent:
  cmd.run:
    - name: rmdir {{ aside }}
    - onlyif:
      - test -d {{ aside }} && test -z "$(ls -A {{ aside }})"
    - require:
      - file: sentry-nginx-default-site-restored
