"""Online fine-tuning on a robot over ROS 2: the learner (workstation) that drives the actor side (policy node,
recorder, the sim's or the operator's resets), turns landed dataset episodes into training data and pushes models.
"""
