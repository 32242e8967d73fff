{#- Remove devpi-ldap's file (sentry.auth). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-auth-ldap-config-absent:
  file.absent:
    - name: {{ sentry.derived.auth.ldap_config }}
