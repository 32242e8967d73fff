{#- Remove what sentry deployed, in reverse order; the data in /var/lib/sentry stays. #}
{%- set tplroot = tpldir.split("/")[0] %}

include:
  - {{ tplroot }}.package.clean
