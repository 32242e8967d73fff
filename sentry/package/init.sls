{#- Install the sentry deb from the source the pillar names (package:source). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

include:
  - {{ tplroot }}.package.{{ sentry.package.source }}
