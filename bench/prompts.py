"""Prompts shared by the speed benchmarks: State of the Union openings of different lengths (so a batch is padded)."""

PROMPTS = [
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "The state of our Union is strong, and tonight",
    "In the year that has passed since I last addressed you,",
    "Our economy",
    "We must never forget that the strength of this Nation",
    "Fellow citizens of the Senate and House of Representatives:",
    "I come before you tonight to report",
    "Let me begin with the most urgent question before us:",
]
