"""Text generation: one config, one interface, backends, resumable jobs.

gen = LocalGenerator(model, tokenizer, device)
outs = gen.generate(["Write a haiku."], GenerationConfig(temperature=0.7, n=2, seed=1))
run_job(gen, [("p1", "Write a haiku.")], cfg, "out/gen.jsonl")   # skips done prompts
"""

from fedloom.generation.base import (
    Generation,
    GenerationConfig,
    Prompt,
    TextGenerator,
    cut_at_stop,
    sampling_of,
)
from fedloom.generation.factory import (
    BACKENDS,
    GeneratorConfig,
    GeneratorError,
    build_generator,
    register_backend,
)
from fedloom.generation.jobs import (
    GenerationJobError,
    GenerationStopped,
    IncompleteJob,
    JobReport,
    JobResults,
    finished_ids,
    read_job,
    require_complete,
    run_complete,
    run_job,
)
from fedloom.generation.local import LocalGenerator
from fedloom.generation.openai_backend import OpenAIGenerator

__all__ = [
    "BACKENDS",
    "GeneratorConfig",
    "GeneratorError",
    "OpenAIGenerator",
    "build_generator",
    "register_backend",
    "Generation",
    "GenerationConfig",
    "GenerationJobError",
    "GenerationStopped",
    "IncompleteJob",
    "JobReport",
    "JobResults",
    "LocalGenerator",
    "Prompt",
    "TextGenerator",
    "cut_at_stop",
    "sampling_of",
    "finished_ids",
    "read_job",
    "run_complete",
    "require_complete",
    "run_job",
]
