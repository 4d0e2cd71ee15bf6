// Behavioural model of the ECP5 DP16KD, for Verilator: the subset rtl/memory.py uses. Port A
// writes and port B reads, both DATA_WIDTH wide (1, 2, 4, 9, 18, or 36 as the pseudo dual
// port: data on both ports' pins, {B, A}); the row address sits at ADx[13:k] (k = 5, 4, 3, 2,
// 1, 0 for those widths) with byte enables below it in the 18- and 36-bit modes (ADA0..1 and
// ADA0..3, one per 9-bit lane of the data, low lane first). A write happens on CLKA when CEA
// and WEA, to the lanes whose byte enables are set; a read on CLKB when CEB latches the row,
// and with REGMODE_B = "OUTREG" a register enabled by OCEB follows it. No resets, no chip selects, no
// collision behaviour (the engine never reads a row in the cycle it is written). Lattice
// FPGA-TN-02204 (ECP5 memory usage guide) describes the primitive.
/* verilator lint_off UNUSEDPARAM */
/* verilator lint_off UNUSEDSIGNAL */
module DP16KD #(
    parameter DATA_WIDTH_A = 18, parameter DATA_WIDTH_B = 18,
    parameter REGMODE_A = "NOREG", parameter REGMODE_B = "NOREG",
    parameter RESETMODE = "SYNC", parameter ASYNC_RESET_RELEASE = "SYNC",
    parameter CSDECODE_A = "0b000", parameter CSDECODE_B = "0b000",
    parameter WRITEMODE_A = "NORMAL", parameter WRITEMODE_B = "NORMAL",
    parameter GSR = "ENABLED"
) (
    input DIA0, input DIA1, input DIA2, input DIA3, input DIA4, input DIA5, input DIA6,
    input DIA7, input DIA8, input DIA9, input DIA10, input DIA11, input DIA12, input DIA13,
    input DIA14, input DIA15, input DIA16, input DIA17,
    input DIB0, input DIB1, input DIB2, input DIB3, input DIB4, input DIB5, input DIB6,
    input DIB7, input DIB8, input DIB9, input DIB10, input DIB11, input DIB12, input DIB13,
    input DIB14, input DIB15, input DIB16, input DIB17,
    input ADA0, input ADA1, input ADA2, input ADA3, input ADA4, input ADA5, input ADA6,
    input ADA7, input ADA8, input ADA9, input ADA10, input ADA11, input ADA12, input ADA13,
    input ADB0, input ADB1, input ADB2, input ADB3, input ADB4, input ADB5, input ADB6,
    input ADB7, input ADB8, input ADB9, input ADB10, input ADB11, input ADB12, input ADB13,
    input CLKA, input CEA, input WEA, input OCEA, input RSTA, input CSA0, input CSA1,
    input CSA2,
    input CLKB, input CEB, input WEB, input OCEB, input RSTB, input CSB0, input CSB1,
    input CSB2,
    output DOA0, output DOA1, output DOA2, output DOA3, output DOA4, output DOA5,
    output DOA6, output DOA7, output DOA8, output DOA9, output DOA10, output DOA11,
    output DOA12, output DOA13, output DOA14, output DOA15, output DOA16, output DOA17,
    output DOB0, output DOB1, output DOB2, output DOB3, output DOB4, output DOB5,
    output DOB6, output DOB7, output DOB8, output DOB9, output DOB10, output DOB11,
    output DOB12, output DOB13, output DOB14, output DOB15, output DOB16, output DOB17
);
/* verilator lint_on UNUSEDPARAM */
    localparam W = DATA_WIDTH_B;
    localparam K = (W == 36) ? 5 : (W == 18) ? 4 : (W == 9) ? 3 : (W == 4) ? 2 : (W == 2) ? 1 : 0;
    wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
    wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
    wire [35:0] di = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
                      DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    reg [W-1:0] rows [0:(1 << (14 - K)) - 1];
    reg [W-1:0] latched = 0;
    reg [W-1:0] held = 0;
    wire [3:0] be = (W >= 18) ? ada[3:0] : 4'hF;   // 18 bits: ADA2..3 are address bits, unused
    integer j;
    always @(posedge CLKA)
        if (CEA && WEA)
            for (j = 0; j < W; j = j + 1)
                if (be[j / 9]) rows[ada[13:K]][j] <= di[j];
    always @(posedge CLKB) begin
        if (CEB) latched <= rows[adb[13:K]];
        if (OCEB) held <= latched;
    end
    wire [W-1:0] q = (REGMODE_B == "OUTREG") ? held : latched;
    wire [35:0] q36 = {{(36 - W){1'b0}}, q};
    // 36 bits: {DOB, DOA}; narrower: port B's pins from DOB0 up
    wire [35:0] pins = (W == 36) ? q36 : {q36[17:0], 18'd0};
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0,
            DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = pins;
/* verilator lint_on UNUSEDSIGNAL */
endmodule
