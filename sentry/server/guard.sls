{#- An import or upgrade of the data keeps a trail beside the serverdir
    (<serverdir>.operation.json) while it runs; one that died (kill -9, OOM,
    reboot) leaves it behind, with the data perhaps aside and the package
    half changed. Until it ends, or sentry_data.recover has put things back,
    the states that install the package or start the server or nginx require
    this one, so an apply changes nothing and says what to run. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import sentry with context %}

sentry-server-no-interrupted-operation:
  sentry_server.not_interrupted:
    - name: {{ sentry.server.serverdir }}
