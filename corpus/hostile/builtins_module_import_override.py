# threat: override builtins.__import__ in the builtins module to hijack imports
# expect: contained
# local: no
# note: local executor bug: sessions created later copy the tampered builtins module, so their imports fail
import builtins
def hijack(name, *args, **kwargs):
    raise ImportError("hijacked import of " + name)
builtins.__import__ = hijack
