"""The sandbox: runs untrusted team images under a phase's limits and checks what they write.

``docker_engine`` is the only module that talks to the engine; ``container_runner`` runs a
submission (provision, execute, collect_outputs, deprovision); ``intake`` checks archives
and images before they run; ``outputs`` checks what a run wrote; ``evaluate_image`` ties
them to the evaluator; ``kit`` is the team's starter kit; ``exceptions`` names errors by
what the caller does with them.
"""
