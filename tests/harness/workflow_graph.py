"""Describe a ComfyUI graph once in Python and write it in both formats ComfyUI uses.

* API format (what POST /prompt executes): {id: {"class_type", "inputs", "_meta"}}.
* UI format (what users drag onto the canvas, litegraph "version 0.4"): nodes with positions,
  ordered ``widgets_values``, typed links.

The node definitions (input order, which inputs are widgets, output types) come from a real
server's /object_info, so the UI files match what the frontend itself would save.
"""

import uuid

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}  # the frontend adds a "control after generate" widget after these
COLUMN_WIDTH, ROW_GAP, NODE_WIDTH = 400, 40, 340


class Output:
    """Output ``slot`` of ``node`` (the value of a link input)."""

    def __init__(self, node, slot):
        self.node, self.slot = node, slot


class Node:
    def __init__(self, graph, node_id, class_type, inputs, title):
        self.graph, self.id, self.class_type, self.inputs, self.title = graph, node_id, class_type, inputs, title

    def __getitem__(self, slot):
        return Output(self, slot)


class Graph:
    """Nodes added in execution-friendly order; ids are 1, 2, 3, ..."""

    def __init__(self, name, title, description=""):
        self.name, self.title, self.description = name, title, description
        self.nodes = []

    def add(self, class_type, title=None, **inputs):
        node = Node(self, len(self.nodes) + 1, class_type, inputs, title)
        self.nodes.append(node)
        return node

    def api(self, object_info):
        """API format; widget inputs not given take the node's default."""
        prompt = {}
        for node in self.nodes:
            inputs = {}
            for name, spec in _ordered_inputs(object_info, node.class_type):
                if name in node.inputs:
                    value = node.inputs[name]
                    inputs[name] = [str(value.node.id), value.slot] if isinstance(value, Output) else value
                elif _is_widget(spec):
                    inputs[name] = _default(spec)
            unknown = set(node.inputs) - set(inputs)
            if unknown:
                raise ValueError(f"{self.name}: {node.class_type} has no inputs {sorted(unknown)}")
            prompt[str(node.id)] = {"class_type": node.class_type, "inputs": inputs,
                                    "_meta": {"title": node.title or _display(object_info, node.class_type)}}
        return prompt

    def ui(self, object_info):
        """UI (litegraph) format with automatic left-to-right layout."""
        links, link_of = [], {}
        for node in self.nodes:
            for name, spec in _ordered_inputs(object_info, node.class_type):
                value = node.inputs.get(name)
                if isinstance(value, Output):
                    link_id = len(links) + 1
                    out_type = object_info[value.node.class_type]["output"][value.slot]
                    links.append([link_id, value.node.id, value.slot, node.id, None, out_type])
                    link_of[(node.id, name)] = link_id
        depth = self._depths()
        rows = {}
        nodes = []
        for order, node in enumerate(self.nodes):
            info = object_info[node.class_type]
            inputs, widgets = [], []
            for name, spec in _ordered_inputs(object_info, node.class_type):
                link = link_of.get((node.id, name))
                if _is_widget(spec):
                    widgets.append(_default(spec) if link is not None else node.inputs.get(name, _default(spec)))
                    if name in SEED_NAMES:
                        widgets.append("fixed")
                    if isinstance(spec[0], list) and len(spec) > 1 and spec[1].get("image_upload"):
                        widgets.append("image")
                    if link is not None:
                        inputs.append({"name": name, "type": _type_name(spec), "widget": {"name": name}, "link": link})
                elif link is not None:
                    inputs.append({"name": name, "type": _type_name(spec), "link": link})
            for slot, entry in enumerate(inputs):
                links[entry["link"] - 1][4] = slot
            outputs = []
            for slot, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"])):
                out_links = [link[0] for link in links if link[1] == node.id and link[2] == slot]
                outputs.append({"name": out_name, "type": out_type, "links": out_links, "slot_index": slot})
            column = depth[node.id]
            row = rows.get(column, 0)
            height = 80 + 26 * max(len(widgets), len(inputs), len(outputs), 1)
            rows[column] = row + height + ROW_GAP
            entry = {"id": node.id, "type": node.class_type, "pos": [40 + column * COLUMN_WIDTH, 40 + row],
                     "size": [NODE_WIDTH, height], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
                     "outputs": outputs, "properties": {"Node name for S&R": node.class_type},
                     "widgets_values": widgets}
            if node.title:
                entry["title"] = node.title
            nodes.append(entry)
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "stepvideo-comfy/" + self.name)), "revision": 0,
                "last_node_id": len(self.nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]},
                                                      "stepvideo": {"title": self.title,
                                                                    "description": self.description}},
                "version": 0.4}

    def _depths(self):
        depth = {}
        for node in self.nodes:
            sources = [v.node.id for v in node.inputs.values() if isinstance(v, Output)]
            depth[node.id] = 1 + max((depth[s] for s in sources), default=-1)
        return depth


def _ordered_inputs(object_info, class_type):
    """[(name, spec)] of a node's required then optional inputs in definition order (hidden excluded)."""
    if class_type not in object_info:
        raise KeyError(f"the server does not know node type {class_type!r} (is the pack loaded?)")
    info = object_info[class_type]
    order = info.get("input_order") or {part: list(info["input"].get(part, {})) for part in ("required", "optional")}
    return [(name, info["input"][part][name]) for part in ("required", "optional") for name in order.get(part, [])]


def _is_widget(spec):
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _type_name(spec):
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def _default(spec):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0] if kind else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def _display(object_info, class_type):
    return object_info[class_type].get("display_name") or class_type
