"""Preference judges for the `preference` labeler: each answers, for pairs of committed frames, which one is
closer to achieving the task (robot_stack.label.base: 0 first, 1 second, -1 abstain). JUDGES names them."""

JUDGES = {
    "time": "robot_stack.label.judges.time_order:TimeOrderJudge",
    "oracle": "robot_stack.label.judges.oracle:OracleJudge",
    "clip": "robot_stack.label.judges.clip:ClipJudge",
    "chat": "robot_stack.label.judges.chat:ChatJudge",
    "logprob": "robot_stack.label.judges.logprob:LogprobJudge",
}
"""Judge name -> "module:Class"; the class is constructed with the labeler's options (a dict)."""
