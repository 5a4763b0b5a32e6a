# name: properties, __slots__, classmethod and staticmethod
class Account:
    __slots__ = ("_balance", "owner")
    rate = 0.02
    def __init__(self, owner, balance=0):
        self.owner = owner
        self._balance = balance
    @property
    def balance(self):
        return self._balance
    @balance.setter
    def balance(self, value):
        if value < 0:
            raise ValueError("negative balance")
        self._balance = value
    @classmethod
    def from_text(cls, text):
        owner, amount = text.split(":")
        return cls(owner, int(amount))
    @staticmethod
    def fmt(amount):
        return f"${amount:,.2f}"
a = Account.from_text("ada:1500")
a.balance += 250
print(a.owner, Account.fmt(a.balance))
try:
    a.balance = -1
except ValueError as exc:
    print("rejected:", exc)
try:
    a.nickname = "x"
except AttributeError as exc:
    print("AttributeError caught")
print(Account.__slots__, hasattr(a, "__dict__"), type(Account.balance).__name__)
