TAGS = {"W": "worded_many_ways", "S": "several_domains", "SW": "shared_surface_words", "B": "body_only_clue"}
def R(source, severity, title, body="", hard="", note=""):
    return dict(source=source, severity=severity, title=title, body=body,
                hard=[TAGS[t] for t in hard.split()], note=note)
def G(domain, root_cause, meaning, reports):
    return dict(domain=domain, root_cause=root_cause, meaning=meaning, reports=reports)
