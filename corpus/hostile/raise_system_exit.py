# threat: raise SystemExit directly
# expect: error:SystemExit
# local: yes
raise SystemExit
