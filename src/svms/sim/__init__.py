"""Simulated RoboCasa-style demonstrations and closed-loop evaluation in robosuite (extra `sim`).

One concept per module: `tasks` (environments, cameras, step limits, success), `layout` (the
Panda-Omron state/action layout), `experts` (scripted demonstrators), `language` (instructions),
`generate` (datasets), `policies` (the `Policy` protocol and harness-checking policies), `rollout`
(closed-loop success with Wilson intervals). Importing this package does not import robosuite.
"""
