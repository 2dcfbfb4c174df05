"""The DeepSeekDeployment resource's pydantic models, one concept per module; `deepseek_operator.api`
re-exports every public name (callers import from there)."""
