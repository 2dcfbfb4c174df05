"""OpenAI/DeepSeek wire protocol, without web-framework imports (the server turns it into HTTP).

- errors.py: APIError, the one error shape
- common.py, chat.py, completions.py, models.py: request and response models per route family
- params.py: request -> SamplingParams (token budget, sampling defaults)
- tools.py, structured.py, reasoning.py, features.py: tool calls, response_format grammars,
  `<think>` parsing, logprobs shapes
"""
