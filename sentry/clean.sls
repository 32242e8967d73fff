{#- Remove what sentry deployed, in reverse order; the data in /var/lib/sentry stays. #}
{%- set tplroot = tpldir.split("/")[0] %}

include:
  - {{ tplroot }}.monitor.clean
  - {{ tplroot }}.backup.clean
  - {{ tplroot }}.nginx.clean
  - {{ tplroot }}.supervisor.clean
  - {{ tplroot }}.server.clean
  - {{ tplroot }}.auth.clean
  - {{ tplroot }}.theme.clean
  - {{ tplroot }}.user.clean
  - {{ tplroot }}.package.clean
