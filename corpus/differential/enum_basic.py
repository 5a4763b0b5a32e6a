# name: Enum, IntEnum, Flag and auto
from enum import Enum, IntEnum, Flag, auto
class Level(Enum):
    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40
class Priority(IntEnum):
    LOW = auto()
    MID = auto()
    HIGH = auto()
class Perm(Flag):
    R = auto()
    W = auto()
    X = auto()
print(Level.INFO, Level.INFO.name, Level.INFO.value, Level(30), Level["ERROR"])
print([l.name for l in Level], Level.WARN in Level)
print(Priority.HIGH > Priority.LOW, Priority.MID + 1, sorted([Priority.HIGH, Priority.LOW]))
print(repr(Level.DEBUG), repr(Priority.MID))
rw = Perm.R | Perm.W
print(Perm.R in rw, Perm.X in rw, rw.value)
counts = {level: context.count("] " + level.name + " ") for level in Level}
print({level.name: n for level, n in counts.items()})
