import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

// Shows what a StepVideo node reports after it runs (the path Image To Video took, the sampler's
// memory estimate) in a read-only text box on the node. The box is not saved with the workflow.
app.registerExtension({
  name: "StepVideo.NodeReports",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("StepVideo")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (!message?.text?.length) return;
      let widget = this.widgets?.find((w) => w.name === "stepvideo_report");
      if (!widget) {
        widget = ComfyWidgets.STRING(this, "stepvideo_report", ["STRING", { multiline: true }], app).widget;
        widget.serialize = false;
        widget.options = { ...(widget.options || {}), serialize: false };
        if (widget.inputEl) widget.inputEl.readOnly = true;
      }
      widget.value = message.text.join("\n");
      this.setDirtyCanvas?.(true, true);
    };
  },
});
