// Behavioural model of the ECP5 MULT18X18D, for Verilator: the subset rtl/dsp.py uses
// (18x18 multiply, signed or unsigned operands, optional input registers and an optional
// output register, all on CLK0 with clock enable CE0 and synchronous reset RST0; no pipeline
// register). Lattice
// FPGA-TN-02205 (ECP5 sysDSP usage guide) describes the primitive.
/* verilator lint_off UNUSEDPARAM */
module MULT18X18D #(
    parameter REG_INPUTA_CLK = "NONE", parameter REG_INPUTA_CE = "CE0",
    parameter REG_INPUTA_RST = "RST0", parameter REG_INPUTB_CLK = "NONE",
    parameter REG_INPUTB_CE = "CE0", parameter REG_INPUTB_RST = "RST0",
    parameter REG_INPUTC_CLK = "NONE", parameter REG_PIPELINE_CLK = "NONE",
    parameter REG_PIPELINE_CE = "CE0", parameter REG_PIPELINE_RST = "RST0",
    parameter REG_OUTPUT_CLK = "NONE", parameter REG_OUTPUT_CE = "CE0",
    parameter REG_OUTPUT_RST = "RST0", parameter CLK0_DIV = "ENABLED",
    parameter GSR = "ENABLED", parameter RESETMODE = "SYNC",
    parameter SOURCEB_MODE = "B_SHIFT", parameter MULT_BYPASS = "DISABLED"
) (
    input A0,
    input A1,
    input A2,
    input A3,
    input A4,
    input A5,
    input A6,
    input A7,
    input A8,
    input A9,
    input A10,
    input A11,
    input A12,
    input A13,
    input A14,
    input A15,
    input A16,
    input A17,
    input B0,
    input B1,
    input B2,
    input B3,
    input B4,
    input B5,
    input B6,
    input B7,
    input B8,
    input B9,
    input B10,
    input B11,
    input B12,
    input B13,
    input B14,
    input B15,
    input B16,
    input B17,
    input SIGNEDA,
    input SIGNEDB,
    input SOURCEA,
    input SOURCEB,
    input CLK0,
    input CE0,
    input RST0,
    output P0,
    output P1,
    output P2,
    output P3,
    output P4,
    output P5,
    output P6,
    output P7,
    output P8,
    output P9,
    output P10,
    output P11,
    output P12,
    output P13,
    output P14,
    output P15,
    output P16,
    output P17,
    output P18,
    output P19,
    output P20,
    output P21,
    output P22,
    output P23,
    output P24,
    output P25,
    output P26,
    output P27,
    output P28,
    output P29,
    output P30,
    output P31,
    output P32,
    output P33,
    output P34,
    output P35
);
/* verilator lint_on UNUSEDPARAM */
    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg [17:0] a_held;
    reg [17:0] b_held;
    always @(posedge CLK0)
        if (RST0) begin
            a_held <= 18'd0;
            b_held <= 18'd0;
        end else if (CE0) begin
            a_held <= a_in;
            b_held <= b_in;
        end
    wire [17:0] a = (REG_INPUTA_CLK == "NONE") ? a_in : a_held;
    wire [17:0] b = (REG_INPUTB_CLK == "NONE") ? b_in : b_held;
    wire signed [18:0] sa = {SIGNEDA & a[17], a};
    wire signed [18:0] sb = {SIGNEDB & b[17], b};
    wire signed [37:0] full = sa * sb;
    reg [35:0] held;
    always @(posedge CLK0)
        if (RST0) held <= 36'd0;
        else if (CE0) held <= full[35:0];
    wire unused = &{1'b0, SOURCEA, SOURCEB, full[37:36]};
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = (REG_OUTPUT_CLK == "NONE") ? full[35:0] : held;
endmodule
