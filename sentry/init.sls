{#- Deploy sentry: each concern is a sub-state, applied in this order. An opt-in concern switched off
    in pillar (backup, monitor) gets its clean twin: turning it off removes what turning it on set up. #}
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
{%- else %}
  - {{ tplroot }}.backup.clean
{%- endif %}
{%- if sentry.monitor.enabled %}
  - {{ tplroot }}.monitor
{%- else %}
  - {{ tplroot }}.monitor.clean
{%- endif %}
