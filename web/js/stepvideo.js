import { app } from "../../../scripts/app.js";

// Shows what a StepVideo node reports after it runs (the path Image To Video took, the sampler's
// memory estimate) in a read-only text box on the node. The box is not saved with the workflow.
// Only the frontend's public extension API is used: app.registerExtension, the node's onExecuted
// hook and node.addDOMWidget.
const REPORT = "stepvideo_report";

function reportWidget(node) {
  let widget = node.widgets?.find((w) => w.name === REPORT);
  if (!widget) {
    const box = document.createElement("textarea");
    box.readOnly = true;
    box.rows = 3;
    box.style.width = "100%";
    box.style.resize = "none";
    widget = node.addDOMWidget(REPORT, "customtext", box, {
      serialize: false,
      getValue: () => box.value,
      setValue: (value) => { box.value = value; },
    });
  }
  return widget;
}

app.registerExtension({
  name: "StepVideo.NodeReports",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("StepVideo")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (!message?.text?.length) return;
      reportWidget(this).value = message.text.join("\n");
      this.setDirtyCanvas?.(true, true);
    };
  },
});
