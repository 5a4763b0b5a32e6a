# threat: override builtins.__import__ in the builtins module to hijack imports
# expect: contained
# local: yes
# note: sessions copy the builtins snapshot taken at interpreter start, and the local executor restores the shared builtins module after every cell
import builtins
def hijack(name, *args, **kwargs):
    raise ImportError("hijacked import of " + name)
builtins.__import__ = hijack
