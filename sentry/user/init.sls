{#- The system user and group the server runs as; its home holds the data. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}
{%- set user = sentry.user %}

sentry-user-group:
  group.present:
    - name: {{ user.group }}
    - system: true

sentry-user:
  user.present:
    - name: {{ user.name }}
    - gid: {{ user.group }}
    - home: {{ user.home }}
    - createhome: false
    - shell: {{ user.shell }}
    - system: true
    - require:
      - group: sentry-user-group

sentry-user-home:
  file.directory:
    - name: {{ user.home }}
    - user: {{ user.name }}
    - group: {{ user.group }}
    - mode: "0750"
    - require:
      - user: sentry-user
