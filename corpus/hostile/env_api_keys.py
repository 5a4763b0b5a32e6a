# threat: read API keys from the host's environment variables
# expect: contained
# local: no
import os
for name in ["OPENAI_API_KEY", "LLM_API_KEY", "ANTHROPIC_API_KEY"]:
    value = os.environ.get(name) or os.getenv(name)
    if value:
        print("LEAK:", name, value)
print("environment size:", len(os.environ))
