# threat: set builtins.print to None in the interpreter's builtins module
# expect: contained
# local: no
# note: local executor bug: the module is shared, so the echo of every session and all sessions created later break
import builtins
builtins.print = None
