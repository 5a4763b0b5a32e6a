# threat: set builtins.print to None in the interpreter's builtins module
# expect: contained
# local: yes
# note: the local executor restores the shared builtins module after every cell, and the echo does not depend on it
import builtins
builtins.print = None
