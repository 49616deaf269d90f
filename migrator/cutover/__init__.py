"""The cutover: phases, gates, playbooks, the control document applications read, the audit."""
