{#- Deploy sentry: each concern is a sub-state, applied in this order. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

include:
  - {{ tplroot }}.package
  - {{ tplroot }}.user
  - {{ tplroot }}.server
  - {{ tplroot }}.auth
{%- if sentry.theme.enabled %}
  - {{ tplroot }}.theme
{%- endif %}
  - {{ tplroot }}.supervisor
  - {{ tplroot }}.nginx
  - {{ tplroot }}.bootstrap
{%- if sentry.backup.enabled %}
  - {{ tplroot }}.backup
{%- endif %}
{%- if sentry.monitor.enabled %}
  - {{ tplroot }}.monitor
{%- endif %}
