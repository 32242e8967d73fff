{#- Remove the site and reload nginx; nginx itself stays (other sites may use it). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set nginx = sentry.nginx %}

sentry-nginx-site-enabled-absent:
  file.absent:
    - name: {{ nginx.sites_enabled }}/{{ nginx.site }}.conf

sentry-nginx-site-file-absent:
  file.absent:
    - name: {{ nginx.sites_available }}/{{ nginx.site }}.conf

sentry-nginx-reloaded:
  cmd.run:
    - name: nginx -t -q && nginx -s reload
    - onlyif: test -e /run/nginx.pid
    - onchanges:
      - file: sentry-nginx-site-enabled-absent
