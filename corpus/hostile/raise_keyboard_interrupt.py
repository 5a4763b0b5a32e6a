# threat: raise KeyboardInterrupt as if the user pressed Ctrl-C
# expect: error:KeyboardInterrupt
# local: yes
raise KeyboardInterrupt
