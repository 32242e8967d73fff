{#- Remove the user and group; their home (the data) stays. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-user-absent:
  user.absent:
    - name: {{ sentry.user.name }}
    - purge: false

sentry-user-group-absent:
  group.absent:
    - name: {{ sentry.user.group }}
    - require:
      - user: sentry-user-absent
